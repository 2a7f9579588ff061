from prediction_service.commands import main

raise SystemExit(main())
