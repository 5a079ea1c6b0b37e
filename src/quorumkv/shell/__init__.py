"""The I/O shell: asyncio runtime, TCP transport, storage engines, config."""
