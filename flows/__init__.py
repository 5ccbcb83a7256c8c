"""Flows that cross domains: train every model, retrain from the service's store behind a gate, the demo's loop.

`insight`, `routing`, `assist` and `knowledge_hub` each own one domain and stay unaware of each other's training;
a flow composes them. `flows` may import every domain package and is imported only by `api/`, which hands it what
it reads from the settings and the database (a flow never reads the environment).
"""
