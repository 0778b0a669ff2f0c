"""The functional core: status rules, events and check logs. No I/O, no asyncio."""
