"""HTTP routers; every module here exposing `router` is mounted by api.app (one file per area)."""
