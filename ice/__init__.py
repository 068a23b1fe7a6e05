"""Pure ICE pieces (sans-IO). Filled in by the path-engine issue."""
