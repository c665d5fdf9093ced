#!/usr/bin/env bash
# Sends files to a hub with curl only, the way any MASV API client would (spec §3), and prints a
# download link. For demos and benchmarks of the download side without the agent's uploader.
# Usage: hub-upload.sh HUB_URL TEAM_ID API_KEY PACKAGE_NAME FILE[:PACKAGE_FOLDER]...
set -euo pipefail
hub=$1 team=$2 key=$3 name=$4; shift 4
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d'+sys.argv[1]))" "$1"; }
pkg=$(curl -fsS -XPOST "$hub/v1/teams/$team/packages" -H "X-API-KEY: $key" -d "{\"name\":\"$name\"}")
pid=$(json '["id"]' <<<"$pkg"); tok=$(json '["access_token"]' <<<"$pkg")
for spec in "$@"; do
  file=${spec%%:*}; folder=""; [[ $spec == *:* ]] && folder=${spec#*:}
  size=$(stat -c %s "$file")
  added=$(curl -fsS -XPOST "$hub/v1/packages/$pid/files" -H "X-Package-Token: $tok" \
    -d "{\"kind\":\"file\",\"name\":\"$(basename "$file")\",\"path\":\"$folder\",\"size\":$size}")
  fid=$(json '["file"]["id"]' <<<"$added"); create=$(json '["create_blueprint"]["url"]' <<<"$added")
  chunk=$((100 * 1024 * 1024)); parts=$(( (size + chunk - 1) / chunk )); [ "$parts" -eq 0 ] && parts=1
  upload=$(curl -fsS -XPOST "$create" | grep -o '<UploadId>[^<]*' | cut -d'>' -f2)
  urls=$(curl -fsS -XPOST "$hub/v1/packages/$pid/files/$fid?start=0&count=$parts" -H "X-Package-Token: $tok" -d "{\"upload_id\":\"$upload\"}")
  extras=""
  for ((i = 0; i < parts; i++)); do
    url=$(json "[$i][\"url\"]" <<<"$urls")
    etag=$(dd if="$file" iflag=skip_bytes,count_bytes skip=$((i * chunk)) count="$chunk" bs=1M status=none | curl -fsS -D- -o /dev/null -XPUT --data-binary @- "$url" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')
    extras+="${extras:+,}{\"partNumber\":\"$((i + 1))\",\"etag\":$(python3 -c 'import json,sys;print(json.dumps(sys.argv[1]))' "$etag")}"
  done
  curl -fsS -o /dev/null -XPOST "$hub/v1/packages/$pid/files/$fid/finalize" -H "X-Package-Token: $tok" \
    -d "{\"size\":$size,\"chunk_size\":$chunk,\"file_extras\":{\"upload_id\":\"$upload\"},\"chunk_extras\":[$extras]}"
done
curl -fsS -o /dev/null -XPOST "$hub/v1/packages/$pid/finalize" -H "X-Package-Token: $tok"
link=$(curl -fsS -XPOST "$hub/v1/packages/$pid/links" -H "X-Package-Token: $tok" -d '{}')
echo "$hub/$(json '["id"]' <<<"$link")?secret=$(json '["download_secret"]' <<<"$link")"
