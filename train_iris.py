"""Train the iris model: `python train_iris.py --help`."""

from prediction_service.commands.train import main

if __name__ == "__main__":
    raise SystemExit(main(model="iris"))
