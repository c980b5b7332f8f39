"""Who initiates each OCPP action, per version.

The `ocpp` package ships schemas but not message direction, so these lists are transcribed from
the specifications: OCPP 1.6 edition 2 §4 ("Operations initiated by Charge Point") and §5
("Operations initiated by Central System"), plus the 1.6 Security Whitepaper edition 3; OCPP 2.0.1
and 2.1 Part 2, whose use cases name the sender of every message. DataTransfer goes both ways in
every version. tests/test_validation.py checks that these lists cover exactly the shipped schemas.
"""

_V16_CP = (
    # Core, Firmware Management, Security Whitepaper
    "Authorize BootNotification DataTransfer DiagnosticsStatusNotification "
    "FirmwareStatusNotification Heartbeat LogStatusNotification MeterValues "
    "SecurityEventNotification SignCertificate SignedFirmwareStatusNotification StartTransaction "
    "StatusNotification StopTransaction"
)
_V16_CSMS = (
    # Core, Firmware Management, Local Auth List, Reservation, Smart Charging, Remote Trigger,
    # Security Whitepaper
    "CancelReservation CertificateSigned ChangeAvailability ChangeConfiguration ClearCache "
    "ClearChargingProfile DataTransfer DeleteCertificate ExtendedTriggerMessage "
    "GetCompositeSchedule GetConfiguration GetDiagnostics GetInstalledCertificateIds "
    "GetLocalListVersion GetLog InstallCertificate RemoteStartTransaction RemoteStopTransaction "
    "ReserveNow Reset SendLocalList SetChargingProfile SignedUpdateFirmware TriggerMessage "
    "UnlockConnector UpdateFirmware"
)

_V201_CP = (
    "Authorize BootNotification ClearedChargingLimit DataTransfer FirmwareStatusNotification "
    "Get15118EVCertificate GetCertificateStatus Heartbeat LogStatusNotification MeterValues "
    "NotifyChargingLimit NotifyCustomerInformation NotifyDisplayMessages NotifyEVChargingNeeds "
    "NotifyEVChargingSchedule NotifyEvent NotifyMonitoringReport NotifyReport "
    "PublishFirmwareStatusNotification ReportChargingProfiles ReservationStatusUpdate "
    "SecurityEventNotification SignCertificate StatusNotification TransactionEvent"
)
_V201_CSMS = (
    "CancelReservation CertificateSigned ChangeAvailability ClearCache ClearChargingProfile "
    "ClearDisplayMessage ClearVariableMonitoring CostUpdated CustomerInformation DataTransfer "
    "DeleteCertificate GetBaseReport GetChargingProfiles GetCompositeSchedule GetDisplayMessages "
    "GetInstalledCertificateIds GetLocalListVersion GetLog GetMonitoringReport GetReport "
    "GetTransactionStatus GetVariables InstallCertificate PublishFirmware RequestStartTransaction "
    "RequestStopTransaction ReserveNow Reset SendLocalList SetChargingProfile SetDisplayMessage "
    "SetMonitoringBase SetMonitoringLevel SetNetworkProfile SetVariableMonitoring SetVariables "
    "TriggerMessage UnlockConnector UnpublishFirmware UpdateFirmware"
)

# 2.1 = 2.0.1 plus the new use cases (DER control, tariffs, periodic event streams, battery swap,
# priority charging, payment terminals, dynamic schedules).
_V21_CP = _V201_CP + (
    " BatterySwap ClosePeriodicEventStream GetCertificateChainStatus NotifyDERAlarm "
    "NotifyDERStartStop NotifyPeriodicEventStream NotifyPriorityCharging NotifySettlement "
    "OpenPeriodicEventStream PullDynamicScheduleUpdate ReportDERControl VatNumberValidation"
)
_V21_CSMS = _V201_CSMS + (
    " AFRRSignal AdjustPeriodicEventStream ChangeTransactionTariff ClearDERControl ClearTariffs "
    "GetDERControl GetPeriodicEventStream GetTariffs NotifyAllowedEnergyTransfer "
    "NotifyWebPaymentStarted RequestBatterySwap SetDERControl SetDefaultTariff "
    "UpdateDynamicSchedule UsePriorityCharging"
)

#: version -> initiator ("cp" | "csms") -> action names
INITIATED_BY: dict[str, dict[str, frozenset[str]]] = {
    "1.6": {"cp": frozenset(_V16_CP.split()), "csms": frozenset(_V16_CSMS.split())},
    "2.0.1": {"cp": frozenset(_V201_CP.split()), "csms": frozenset(_V201_CSMS.split())},
    "2.1": {"cp": frozenset(_V21_CP.split()), "csms": frozenset(_V21_CSMS.split())},
}
