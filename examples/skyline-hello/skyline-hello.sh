#!/bin/sh
echo "hello from skyline"
