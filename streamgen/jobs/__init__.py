"""Jobs: what a job is, how its events are published, where jobs are kept, who accepts them
and who runs them. One idea a module, in the order a job meets them:

- `record`: the `Job` record — its `JobSpec`, `JobState` and handles (a leaf: everyone
  reads it)
- `log`: a job's event log: publishing its typed events in order, its video from the log
- `store`: the `JobStore` seam and `MemoryJobStore` (one process)
- `codec`: a job as flat fields and back, the one codec for every store (Redis, the disk
  archive)
- `redis_store`: `RedisJobStore` (replicas and workers on one Redis), composed of its
  sides by who calls them: `redis_api` (the API replicas), `redis_worker` (the workers),
  `redis_control` (the control channel, the keeper); with its `redis_schema` (keys, Lua
  scripts) and `redis_reaper` (jobs whose worker died)
- `load`: what a worker reports of its load (estimated start times, `/health`), and how
- `manager`: `JobManager`, the API side (accept, look up, cancel, leases)
- `schedule`: the worker's policy, pure functions (cost model, which batch next, admission
  of live streams)
- `active`: one job a worker holds (its segment loop, encoder, publisher), and the set
- `scheduler`: the policy applied to the jobs a worker holds, with the state it keeps
  (the seam for admission and cost)
- `runner`: running the batches the scheduler chooses on the device thread; ending jobs
- `claim`: taking jobs from the store as far as the scheduler admits them
- `worker`: `Worker`, the composition of claim, runner and load reports

The pieces are put together in one place, `streamgen.runtime`."""

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
