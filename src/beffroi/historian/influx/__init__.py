"""The InfluxDB historian: line-protocol writes through influxdb-client, InfluxQL reads."""
