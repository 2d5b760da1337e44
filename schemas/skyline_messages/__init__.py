"""fedora-messaging schemas for Skyline's messages.

Install this package (it registers the classes under the `fedora.messages` entry point) and any
fedora-messaging consumer decodes Skyline's messages into these classes.
"""

from .build import (
    BuildChainRequestV1,
    BuildCompleteV1,
    BuildFailedV1,
    BuildQueuedV1,
    BuildRequestV1,
    BuildStoredV1,
)
from .host import HostEnrolledV1, HostHeartbeatV1, HostStatusV1, HostTrustV1
from .task import (
    TaskFinishedV1,
    TaskLeasedV1,
    TaskMismatchV1,
    TaskReplicateV1,
    TaskRevokedV1,
    TaskStartedV1,
    TaskVerifiedV1,
)
from .throttle import ThrottleEngagedV1, ThrottleReleasedV1

__all__ = [
    "BuildChainRequestV1",
    "BuildCompleteV1",
    "BuildFailedV1",
    "BuildQueuedV1",
    "BuildRequestV1",
    "BuildStoredV1",
    "HostEnrolledV1",
    "HostHeartbeatV1",
    "HostStatusV1",
    "HostTrustV1",
    "TaskFinishedV1",
    "TaskLeasedV1",
    "TaskMismatchV1",
    "TaskReplicateV1",
    "TaskRevokedV1",
    "TaskStartedV1",
    "TaskVerifiedV1",
    "ThrottleEngagedV1",
    "ThrottleReleasedV1",
]
