"""The lab: etcd servers, network-namespace clusters and workloads for the demo, tests and
benchmarks."""
