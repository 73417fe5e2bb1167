"""The HTTP gateway: a FastAPI app over `usetl.platform.service.Platform` (app.py), its
server (server.py) and a client (client.py). Nothing is imported here, so that the CLI's
client commands start without loading FastAPI."""
