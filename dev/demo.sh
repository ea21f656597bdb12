#!/usr/bin/env bash
# Set up, index a folder of photos into ./iddetective-data, then show how to search it.
#   dev/demo.sh [PHOTO_FOLDER] [more iddetective index options...]
# Without a folder it indexes the example photos of the shared face sets, named by their
# labels.csv (the two group photos stay unlabelled: search them to see who is in them).
set -euo pipefail
cd "$(dirname "$0")/.."
dev/setup.sh
faces=${IDDETECTIVE_FACES:-../shared/faces}
data=${IDDETECTIVE_DATA:-./iddetective-data}
if [ $# -eq 0 ]; then
    example="$faces/face_recognition/images"
    if [ ! -d "$example" ]; then
        echo "usage: dev/demo.sh PHOTO_FOLDER (no example folder at $example)" >&2
        exit 2
    fi
    set -- "$example" --people "$faces/face_recognition/labels.csv"
fi
status=0
.venv/bin/iddetective index "$@" --data "$data" --workers "$(nproc)" || status=$?
[ "$status" -eq 0 ] || [ "$status" -eq 3 ] || exit "$status"
.venv/bin/iddetective stats --data "$data"
cat <<TEXT

Search it with any photo:
    .venv/bin/iddetective search PHOTO.jpg --data $data
    .venv/bin/iddetective search PHOTO.jpg --data $data --json
    .venv/bin/iddetective people --data $data
TEXT
