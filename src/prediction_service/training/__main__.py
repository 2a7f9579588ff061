from prediction_service.commands.train import main

raise SystemExit(main())
