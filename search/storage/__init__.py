"""Study storage engineering: URLs -> storages, owned trials, the gRPC proxy, budget counts, heartbeats."""
