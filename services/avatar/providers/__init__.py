"""3D model providers behind one interface, a failover chain and circuit breakers."""
