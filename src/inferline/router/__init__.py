"""The router: one data-plane entry that routes V2 calls to the server replicas holding a model.

Kept empty on purpose: the scheduler imports `inferline.router.routes`, and should not pay for
uvicorn, grpc and httpx by doing so. Import from the modules: `app` (Router, RouterConfig,
run_router), `table` (route sources and RouteFollower), `routes` (the table itself).
"""
