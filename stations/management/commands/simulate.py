"""A simulated charge point for trying the gateway without hardware (built on the `ocpp` package).

It boots, then sends heartbeats, status and meter values, and answers the commands an operator
tries first. The gateway only forwards: unless a backend answers the station's CALLs on MQTT,
each one ends in a CALLERROR or a timeout, which the simulator logs and shrugs off.
"""

import argparse
import asyncio
import base64
import datetime
import logging
import random

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

log = logging.getLogger("ocppgw.simulate")

CALL_TIMEOUT_S = 10  # shorter than the gateway's 30 s: a silent backend must not stall the loop


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# what GetConfiguration (1.6) and GetVariables (2.0.1/2.1, component OCPPCommCtrlr) report
SETTINGS = {"HeartbeatInterval": "10", "MeterValueSampleInterval": "10"}


def build_v16(cid, connection, timeout):
    """An ocpp.v16 ChargePoint answering Reset, RemoteStart/Stop, ChangeAvailability, Trigger,
    GetConfiguration."""
    from ocpp.routing import on
    from ocpp.v16 import ChargePoint, call, call_result
    from ocpp.v16.enums import (
        Action,
        AvailabilityStatus,
        ChargePointErrorCode,
        ChargePointStatus,
        RemoteStartStopStatus,
        ResetStatus,
        TriggerMessageStatus,
    )

    class Simulated(ChargePoint):
        transaction_id = None

        @on(Action.reset)
        def on_reset(self, type, **kwargs):
            log.info("%s: Reset %s accepted", self.id, type)
            return call_result.Reset(status=ResetStatus.accepted)

        @on(Action.remote_start_transaction)
        def on_remote_start(self, id_tag, **kwargs):
            self.transaction_id = random.randint(1, 10**6)
            return call_result.RemoteStartTransaction(status=RemoteStartStopStatus.accepted)

        @on(Action.remote_stop_transaction)
        def on_remote_stop(self, transaction_id, **kwargs):
            self.transaction_id = None
            return call_result.RemoteStopTransaction(status=RemoteStartStopStatus.accepted)

        @on(Action.change_availability)
        def on_change_availability(self, connector_id, type, **kwargs):
            return call_result.ChangeAvailability(status=AvailabilityStatus.accepted)

        @on(Action.trigger_message)
        def on_trigger(self, requested_message, **kwargs):
            return call_result.TriggerMessage(status=TriggerMessageStatus.accepted)

        @on(Action.get_configuration)
        def on_get_configuration(self, key=None, **kwargs):
            wanted = key or list(SETTINGS)
            known = [
                {"key": k, "readonly": True, "value": SETTINGS[k]} for k in wanted if k in SETTINGS
            ]
            unknown = [k for k in wanted if k not in SETTINGS]
            return call_result.GetConfiguration(
                configuration_key=known, unknown_key=unknown or None
            )

        async def boot(self):
            return await self.call(
                call.BootNotification(charge_point_model="ocppgw-sim", charge_point_vendor="ocppgw")
            )

        async def heartbeat(self):
            return await self.call(call.Heartbeat())

        async def status(self):
            return await self.call(
                call.StatusNotification(
                    connector_id=1,
                    error_code=ChargePointErrorCode.no_error,
                    status=ChargePointStatus.charging
                    if self.transaction_id
                    else ChargePointStatus.available,
                    timestamp=_now(),
                )
            )

        async def meter(self, wh):
            return await self.call(
                call.MeterValues(
                    connector_id=1,
                    transaction_id=self.transaction_id,
                    meter_value=[{"timestamp": _now(), "sampledValue": [{"value": str(wh)}]}],
                )
            )

    return Simulated(cid, connection, response_timeout=timeout)


def build_v201(cid, connection, timeout, package="v201"):
    """An ocpp.v201 (or, with package="v21", ocpp.v21) ChargePoint answering Reset,
    RequestStart/Stop, ChangeAvailability, Trigger, GetVariables."""
    import importlib

    from ocpp.routing import on

    module = importlib.import_module(f"ocpp.{package}")
    enums = importlib.import_module(f"ocpp.{package}.enums")
    ChargePoint, call, call_result = module.ChargePoint, module.call, module.call_result
    Action = enums.Action
    BootReasonEnumType = enums.BootReasonEnumType
    ChangeAvailabilityStatusEnumType = enums.ChangeAvailabilityStatusEnumType
    ConnectorStatusEnumType = enums.ConnectorStatusEnumType
    RequestStartStopStatusEnumType = enums.RequestStartStopStatusEnumType
    ResetStatusEnumType = enums.ResetStatusEnumType
    TriggerMessageStatusEnumType = enums.TriggerMessageStatusEnumType
    GetVariableStatusEnumType = enums.GetVariableStatusEnumType

    class Simulated(ChargePoint):
        transaction_id = None

        @on(Action.reset)
        def on_reset(self, type, **kwargs):
            log.info("%s: Reset %s accepted", self.id, type)
            return call_result.Reset(status=ResetStatusEnumType.accepted)

        @on(Action.request_start_transaction)
        def on_request_start(self, id_token, remote_start_id, **kwargs):
            self.transaction_id = f"tx-{remote_start_id}"
            return call_result.RequestStartTransaction(
                status=RequestStartStopStatusEnumType.accepted
            )

        @on(Action.request_stop_transaction)
        def on_request_stop(self, transaction_id, **kwargs):
            self.transaction_id = None
            return call_result.RequestStopTransaction(
                status=RequestStartStopStatusEnumType.accepted
            )

        @on(Action.change_availability)
        def on_change_availability(self, operational_status, **kwargs):
            return call_result.ChangeAvailability(status=ChangeAvailabilityStatusEnumType.accepted)

        @on(Action.trigger_message)
        def on_trigger(self, requested_message, **kwargs):
            return call_result.TriggerMessage(status=TriggerMessageStatusEnumType.accepted)

        @on(Action.get_variables)
        def on_get_variables(self, get_variable_data, **kwargs):
            results = []
            for item in get_variable_data:
                name = item["variable"]["name"]
                known = item["component"]["name"] == "OCPPCommCtrlr" and name in SETTINGS
                result = {
                    "attribute_status": GetVariableStatusEnumType.accepted
                    if known
                    else GetVariableStatusEnumType.unknown_variable,
                    "component": item["component"],
                    "variable": item["variable"],
                }
                if known:
                    result["attribute_value"] = SETTINGS[name]
                results.append(result)
            return call_result.GetVariables(get_variable_result=results)

        async def boot(self):
            return await self.call(
                call.BootNotification(
                    charging_station={"model": "ocppgw-sim", "vendor_name": "ocppgw"},
                    reason=BootReasonEnumType.power_up,
                )
            )

        async def heartbeat(self):
            return await self.call(call.Heartbeat())

        async def status(self):
            return await self.call(
                call.StatusNotification(
                    timestamp=_now(),
                    connector_status=ConnectorStatusEnumType.occupied
                    if self.transaction_id
                    else ConnectorStatusEnumType.available,
                    evse_id=1,
                    connector_id=1,
                )
            )

        async def meter(self, wh):
            return await self.call(
                call.MeterValues(
                    evse_id=1,
                    meter_value=[{"timestamp": _now(), "sampled_value": [{"value": wh}]}],
                )
            )

    return Simulated(cid, connection, response_timeout=timeout)


BUILDERS = {
    "1.6": build_v16,
    "2.0.1": build_v201,
    "2.1": lambda cid, connection, timeout: build_v201(cid, connection, timeout, "v21"),
}


async def _step(name, coro) -> None:
    """One CALL; a CALLERROR (None) or a timeout is logged and the simulation goes on."""
    try:
        answer = await coro
    except TimeoutError:
        log.warning("%s: no answer (is a backend answering on MQTT?)", name)
        return
    if answer is None:
        log.warning("%s: answered with a CALLERROR", name)
    else:
        log.info("%s: %s", name, answer)


async def run(url, cid, password, version, interval, count=0, call_timeout=CALL_TIMEOUT_S):
    """Connect and simulate until interrupted (or for `count` rounds when count > 0)."""
    import websockets

    headers = {}
    if password:
        token = base64.b64encode(f"{cid}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    async with websockets.connect(
        f"{url.rstrip('/')}/{cid}",
        subprotocols=[f"ocpp{version}"],
        additional_headers=headers,
    ) as ws:
        cp = BUILDERS[version](cid, ws, call_timeout)
        listener = asyncio.create_task(cp.start())
        log.info("%s connected to %s as OCPP %s", cid, url, version)
        try:
            await _step("BootNotification", cp.boot())
            await _step("StatusNotification", cp.status())
            wh, rounds = 0, 0
            while not count or rounds < count:
                await asyncio.sleep(interval)
                wh += random.randint(100, 900)
                await _step("Heartbeat", cp.heartbeat())
                await _step("MeterValues", cp.meter(wh))
                if rounds % 5 == 4:
                    await _step("StatusNotification", cp.status())
                rounds += 1
        finally:
            listener.cancel()


class Command(BaseCommand):
    help = "Run a simulated charge point (OCPP 1.6, 2.0.1 or 2.1) against the gateway."

    def create_parser(self, prog_name, subcommand, **kwargs):
        # our --version is the OCPP version; it replaces Django's "print Django's version"
        parser = super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)
        parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter  # --help shows defaults
        return parser

    def add_arguments(self, parser):
        parser.add_argument("cid")
        parser.add_argument("--password", default="", help="the station's Basic-auth password")
        parser.add_argument(
            "--url", default=f"ws://127.0.0.1:{settings.OCPPGW_PORT}/ocpp", help="gateway URL"
        )
        parser.add_argument(
            "--version", choices=sorted(BUILDERS), default="1.6", help="OCPP version to speak"
        )
        parser.add_argument("--interval", type=float, default=10.0, help="seconds between rounds")
        parser.add_argument("--count", type=int, default=0, help="rounds to run (0 = forever)")
        parser.add_argument(
            "--call-timeout",
            type=float,
            default=CALL_TIMEOUT_S,
            help="seconds to wait for the backend's answer to each CALL before going on",
        )

    def handle(self, *args, cid, password, url, version, interval, count, call_timeout, **opts):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        log.setLevel(logging.INFO)
        # the ocpp package logs every frame at INFO: only with -v 2
        logging.getLogger("ocpp").setLevel(
            logging.INFO if opts["verbosity"] > 1 else logging.WARNING
        )
        try:
            asyncio.run(run(url, cid, password, version, interval, count, call_timeout))
        except KeyboardInterrupt:
            pass
        except OSError as exc:
            raise CommandError(f"cannot connect to {url}: {exc}") from exc
        except Exception as exc:
            if exc.__class__.__module__.startswith("websockets"):
                raise CommandError(f"the gateway closed or refused the connection: {exc}") from exc
            raise
