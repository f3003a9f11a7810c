"""The gateway: one front door that asks every framework service and puts the answers side by side."""
