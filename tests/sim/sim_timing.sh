#!/usr/bin/env bash
# Service times of the nitrokey profile (RSA-2048, RSA-1024, EC P-256 at scale 0.05; attribute
# read, object search and login at scale 1) are within 20% of the profile; profile none adds
# no delay.
. "$(dirname "$0")/lib.sh"
sim_setup
sim_client timing
