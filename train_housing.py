"""Train the housing model: `python train_housing.py --help`."""

from prediction_service.commands.train import main

if __name__ == "__main__":
    raise SystemExit(main(model="housing"))
