"""The ground floor: user-facing errors, registries, the console. Imports nothing else of damoxing."""
