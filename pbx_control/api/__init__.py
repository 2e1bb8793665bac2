"""The HTTP provisioning API for business customers (FastAPI on uvicorn) and the webhook
pusher that runs beside it in the same asyncio process."""
