"""Jobs: what a job is, how its events are published, where jobs are kept, who accepts them
and who runs them. One idea a module, in the order a job meets them:

- `record`: the `Job` record — its `JobSpec`, `JobState` and handles (a leaf: everyone
  reads it)
- `log`: a job's event log: publishing its typed events in order, its video from the log
- `store`: the `JobStore` seam and `MemoryJobStore` (one process)
- `codec`: a job as flat fields and back, for every store (Redis, the disk archive)
- `redis_store`: `RedisJobStore` (replicas and workers on one Redis), with its
  `redis_schema` (keys, Lua scripts) and `redis_reaper` (jobs whose worker died)
- `load`: what a worker reports of its load (estimated start times, `/health`)
- `manager`: `JobManager`, the API side (accept, look up, cancel, leases)
- `schedule`: the worker's policy (cost model, which batch next, admission of live streams)
- `active`: one job a worker holds (its segment loop, encoder, publisher)
- `worker`: `Worker`, which takes jobs from a store and runs them side by side in batches

The pieces are put together in one place, `streamgen.runtime`.
"""

from .log import publish, publish_terminal
from .manager import JobManager, Submission
from .record import FINISHED, Job, JobSpec, JobState, JobStatus, KeyCharge, new_job_id
from .redis_store import RedisJobStore
from .store import CancelOutcome, JobPage, JobStore, MemoryJobStore
from .worker import Worker

__all__ = [
    "FINISHED",
    "CancelOutcome",
    "Job",
    "JobManager",
    "JobPage",
    "JobSpec",
    "JobState",
    "JobStatus",
    "JobStore",
    "KeyCharge",
    "MemoryJobStore",
    "RedisJobStore",
    "Submission",
    "Worker",
    "new_job_id",
    "publish",
    "publish_terminal",
]
