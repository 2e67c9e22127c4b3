"""The rules engine: incidents from the live stream, in event time, as alerts for grid workers."""
