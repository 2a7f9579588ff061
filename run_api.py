"""Serve the prediction API: `python run_api.py --help`."""

from prediction_service.commands.serve import main

if __name__ == "__main__":
    raise SystemExit(main())
