"""The technician's tools: build, flash, deploy, provision, inspect, rescue."""
