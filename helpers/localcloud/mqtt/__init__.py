"""IoT Hub's MQTT device endpoint: packet codec, broker, its store, and the service calls relayed over it."""
