"""The cluster's default Kafka brokers, written into a function's spec at deploy.

A ``kafka-cluster`` trigger may leave ``attributes.brokers`` out; the controller then fills in
its ``TICKRUN_KAFKA_BROKERS`` before the spec is stored, so everything downstream of the store
(the function.yaml in the code folder and image, the lag monitor, KEDA's ScaledObject) reads
real brokers, and replicas never need the controller's environment.
"""

from __future__ import annotations

from collections.abc import Sequence

from tickrun.functions.errors import SpecError
from tickrun.functions.settings import KAFKA_BROKERS
from tickrun.functions.spec import FunctionSpec
from tickrun.triggers.kafka.spec import KafkaTriggerSpec


def with_default_brokers(spec: FunctionSpec, brokers: Sequence[str]) -> FunctionSpec:
    """``spec`` with ``brokers`` in every Kafka trigger that names none (a copy; ``spec`` itself
    when none lacks them). Without ``brokers``, an enabled trigger lacking them is a SpecError
    naming the field and the variable."""
    missing = [
        key
        for key, trigger in spec.spec.triggers.items()
        if isinstance(trigger, KafkaTriggerSpec) and not trigger.attributes.brokers
    ]
    if not missing:
        return spec
    if not brokers:
        enabled = [key for key in missing if not spec.spec.triggers[key].disabled]
        if not enabled:
            return spec
        fields = [f"spec.triggers.{key}.attributes.brokers" for key in enabled]
        raise SpecError(
            f"{', '.join(fields)}: the kafka-cluster trigger names no brokers and this "
            f"controller has no default ({KAFKA_BROKERS.name} is not set): name the brokers in "
            f"the trigger, or set {KAFKA_BROKERS.name} on the controller",
            detail=[
                {"field": f, "message": f"no brokers, and {KAFKA_BROKERS.name} is not set"}
                for f in fields
            ],
        )
    filled = spec.model_copy(deep=True)
    for key in missing:
        trigger = filled.spec.triggers[key]
        assert isinstance(trigger, KafkaTriggerSpec)
        trigger.attributes = trigger.attributes.model_copy(update={"brokers": list(brokers)})
    return filled
