"""The IoT Hub stand-in: the service REST API's routes per resource, its models, store, query language and deployments."""
