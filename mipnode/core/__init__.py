"""Pure protocol cores (sans-IO): HA and MN state machines."""
