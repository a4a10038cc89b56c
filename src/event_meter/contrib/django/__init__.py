"""The Django app of event-meter (SPEC section 14).

Add ``"event_meter.contrib.django"`` to ``INSTALLED_APPS`` (app label
``event_meter``) and configure it with one dict::

    EVENT_METER = {
        "namespace": "billing:event_meter:v1",
        "stream_storage": "file:///var/lib/billing/event_meter",
        "database": "default",          # rollups in this PostgreSQL database
        "auto_cleanup_history": True,
    }

The keys are the options of ``event_meter.configure``; ``"database": ALIAS``
keeps the rollups in that Django database, on Django's own connection, in the
tables the app's migration creates (``manage.py migrate event_meter``; the
DDL is ``sql/schema.sql`` with the prefix ``event_meter``, also printed by
``manage.py event_meter_sql``). ``AppConfig.ready()`` configures the default
meter, so ``event_meter.start(...)`` records from anywhere in the project.
Bad settings never stop the project from starting: they are system check
errors ``event_meter.E001`` ... (see ``settings``) naming the option.

Management commands: ``event_meter_process module:REPORT``,
``event_meter_summary EVENT``, ``event_meter_cleanup --before T`` and
``event_meter_sql``, with the options of the ``event-meter`` CLI. Processing
inside ``transaction.atomic()`` raises ``ConfigurationError``: it runs its own
transactions.
"""
