"""`python -m botline.bot --name py-1 --systems payroll mymodule`: runs the bot `mymodule` defines."""

from botline.bot import main

raise SystemExit(main())
