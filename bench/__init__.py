"""proctor's benchmark suite: what proctor costs on top of the Docker engine, as ratios
against baselines measured in the same run. Run it with `./bench/run`."""
