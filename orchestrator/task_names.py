"""The Celery task names: the public contract (SPEC), in one place.

A leaf module, like errors.py: tasks/ registers these names, celeryconfig routes and schedules
them, the cycle (services/dispatch.py) sends them, app/handlers.py keys chip locks by them and
the metrics name them. Other services send them by name: never rename one.
"""

RUN_CYCLE = "orchestrator.run_cycle"
REPLACE = "orchestrator.replace_chip"
PROMOTE_READY = "orchestrator.promote_warming_to_ready"
PROMOTE_ACTIVE = "orchestrator.promote_ready_to_active"
PROVISION = "orchestrator.provision_chip"
CANCEL = "orchestrator.cancel_chip"
MIGRATE = "orchestrator.migrate_conversations"
DELIVER = "orchestrator.deliver_notifications"
RECONCILE = "orchestrator.reconcile_provisioning"
#: A Salvy webhook, verified by the receiver: re-read the account and act (SPEC "Webhooks").
SALVY_EVENT = "orchestrator.salvy_event"

#: Every task, in SPEC's order.
ALL = (
    RUN_CYCLE,
    REPLACE,
    PROMOTE_READY,
    PROMOTE_ACTIVE,
    PROVISION,
    CANCEL,
    MIGRATE,
    DELIVER,
    RECONCILE,
    SALVY_EVENT,
)
#: Tasks that wait on someone else (Salvy, Slack): routed to the I/O worker's queue.
SLOW_IO = (PROVISION, CANCEL, RECONCILE, DELIVER, SALVY_EVENT)
