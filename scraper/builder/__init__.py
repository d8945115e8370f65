"""`triton-data build`: every stage in order, resumable, sharded and merged (command.py; the stages: plan.py;
running them with CORPUS/build.json: run.py; shards unioned: merge.py)."""
