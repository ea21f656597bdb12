#!/usr/bin/env bash
# Set up, index a folder of photos into ./iddetective-data, then serve the search page.
#   dev/demo.sh [PHOTO_FOLDER] [more iddetective index options...]
#   PORT=8080 dev/demo.sh ...     (default port 8000; the server listens on 127.0.0.1 only)
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

Also from the command line:
    .venv/bin/iddetective search PHOTO.jpg --data $data
    .venv/bin/iddetective people --data $data

TEXT
exec .venv/bin/iddetective serve --data "$data" --port "${PORT:-8000}"
