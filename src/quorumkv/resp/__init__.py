"""The Redis protocol (RESP2/RESP3) front end.

``parser`` (sans-IO framing and reply encoding) and ``commands`` (what each command
does, as pure handlers that ask for reads and writes) import no asyncio or sockets;
the connection that drives them is ``quorumkv.shell.resp_server``.
"""
