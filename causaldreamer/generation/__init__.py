"""The image side as a Lightning workload (DESIGN 6.6): scenarios (scenarios.py) drawn by a sequence
method wrapped in a LightningModule (module.py), each folder written as it is drawn (writer.py), then
scored with the six sequence metrics (scoring.py), all through ``trainer.predict`` (run.py), so DDP
shards the scenarios over devices. Used by generate, evaluate and the studies' scoring."""
