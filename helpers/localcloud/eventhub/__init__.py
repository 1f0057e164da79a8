"""IoT Hub's built-in Event Hubs-compatible endpoint: AMQP 1.0 over TLS on the hub's address, port 5671.

`azure-eventhub`'s `EventHubConsumerClient` reads the devices' telemetry here with the code that
reads Azure's: CBS put-token with the service policy's SAS token, `$management` for partition
information, receiver links on `<entity>/ConsumerGroups/$Default/Partitions/<n>` with the
`apache.org:selector-filter:string` starting position. Built on `python-qpid-proton`.

    log.py      the device-to-cloud messages the MQTT endpoint stores, as partitions of events
    auth.py     CBS tokens: Service Bus SAS checks for the hub's `iothubowner` policy
    wire.py     events and `$management` answers as AMQP messages; starting-position filters
    server.py   the proton handler and `start_eventhub` (its own thread in the local cloud)
    groups.py   consumer groups kept in the store (`python -m helpers.localcloud consumer-group ...`)
    devicebound.py  cloud-to-device messages from `azure-iot-hub` (service token on `$cbs`, `/messages/devicebound`)
    sasl.py     SASL MSSBCBS (uamqp) beside ANONYMOUS
"""
