#!/bin/sh
# qcow2-ref conform reader adapter for 7-Zip (Debian package 7zip, command 7zz).
#
#   7zip-reader.sh IMAGE RAW
#
# Extracts the guest disk of the qcow2 image IMAGE with `7zz e -tqcow -so` (the archive type forced to
# QCOW, so a damaged image is not opened as some other archive type) into the raw file RAW. The exit
# status is 7-Zip's: 0 success, 1 warning (e.g. a data error: the content may be wrong, so it counts
# as a refusal), 2 fatal error (e.g. "Cannot open the file as [QCOW] archive"), 7 command-line
# error, 8 out of memory. On a non-zero status RAW is removed and 7-Zip's messages are printed on one
# line (its report spreads one error over several lines). RAW is written sparse (dd conv=sparse).
#
# Use: qcow2-ref conform --corpus corpus --impl 7zip
#  or: qcow2-ref conform --corpus corpus --reader "$PWD/adapters/7zip-reader.sh {image} {raw}"
set -u
if [ "$#" -ne 2 ]; then
  echo "usage: $0 IMAGE RAW" >&2
  exit 2
fi
image=$1
raw=$2
if ! command -v 7zz >/dev/null 2>&1; then
  echo "7zip-reader: 7zz not found (apt-get install 7zip)" >&2
  exit 127
fi
messages=$(mktemp "${TMPDIR:-/tmp}/7zip-reader.XXXXXX") || exit 1
statusfile=$(mktemp "${TMPDIR:-/tmp}/7zip-reader.XXXXXX") || exit 1
# -bso0/-bsp0: no messages or progress on stdout (stdout is the data); errors go to stderr.
# 7zz writes every byte, zeros included; dd conv=sparse seeks over all-zero blocks instead, so RAW
# takes the disk space of the data only, like qemu-img's output (a 4 GiB disk of zeros costs nothing).
{
  7zz e -tqcow -so -bso0 -bsp0 -- "$image" 2>"$messages"
  echo "$?" >"$statusfile"
} | dd of="$raw" bs=64K iflag=fullblock conv=sparse status=none
ddstatus=$?
status=$(cat "$statusfile")
rm -f -- "$statusfile"
if [ "$status" -eq 0 ] && [ "$ddstatus" -ne 0 ]; then
  echo "7zip-reader: writing $raw failed" >&2
  status=$ddstatus
fi
if [ "$status" -ne 0 ]; then
  rm -f -- "$raw"
  # One line: 7-Zip's non-empty lines without the ones that only repeat the file name.
  name=$(basename -- "$image")
  summary=$(grep -v -x -F -e "$image" -e "$name" -e "ERROR: $image" -e "ERROR: $name" "$messages" | grep -v '^[[:space:]]*$' | paste -s -d '|' - | sed 's/|/; /g')
  echo "7-Zip (exit $status): $summary" >&2
fi
rm -f -- "$messages"
exit "$status"
