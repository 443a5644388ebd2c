"""What the Kafka trigger's two handling paths share (:mod:`.direct`, :mod:`.loop`).

:class:`~.trigger.KafkaTrigger` is the one implementation; the paths see it through this
protocol, so neither imports the trigger that composes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tickrun.functions.interfaces import Dispatcher

    from .config import KafkaConfig
    from .confluent import ConfluentConsumerThread
    from .consumer import ConsumerThread
    from .failures import FailurePolicy
    from .offsets import OffsetBook
    from .publish import Outputs


class KafkaState(Protocol):
    name: str
    config: KafkaConfig
    book: OffsetBook
    trigger_info: Any
    outputs: Outputs
    failures: FailurePolicy
    dispatcher: Dispatcher | None
    thread: ConsumerThread | ConfluentConsumerThread | None  # by attributes.client
    stopping: bool
    revoking: set[Any]
    """Partitions being (or last) revoked: the direct path leaves them alone."""
    attempts: dict[tuple[str, int, int], int]
    processed: dict[str, Any]
    failed: dict[str, Any]

    @property
    def here_tp(self) -> Any:
        """The partition the consumer thread is handling, if any."""
        ...

    def retried(self, record: Any) -> bool:
        """True if ``record`` failed here before (it resumes its retries one at a time)."""
        ...

    def remember_attempts(self, key: tuple[str, int, int], attempts: int) -> None: ...

    def hand_off(
        self, batch: dict[Any, list[Any]], failed_tp: Any, failed: tuple[int, BaseException] | None
    ) -> None:
        """From the consumer thread: queue ``batch`` on the loop path."""
        ...
