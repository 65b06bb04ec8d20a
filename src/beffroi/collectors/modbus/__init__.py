"""Modbus TCP: register maps, grouped reads, confirmed writes through pymodbus."""
