"""The application: settings from the environment, wiring of real parts, what each task calls."""
