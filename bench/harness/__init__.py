"""The benchmark harness: `runner` (plans, fresh fleets per policy and round, result
files and README tables), `loadgen` (closed-loop and Poisson HTTP load with streaming),
`probe` (replica-kill and memory probes)."""
