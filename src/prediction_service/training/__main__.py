from prediction_service.training.cli import main

raise SystemExit(main())
