from prediction_service.cli import main

raise SystemExit(main())
