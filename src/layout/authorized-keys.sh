# Makes root's authorized_keys hold the keys on stdin; see
# AUTHORIZED_KEYS_COMMAND in src/layout.rs.
set -eu
umask 077
mkdir -p /root/.ssh
keys=/root/.ssh/authorized_keys managed=/root/.ssh/authorized_keys.infrahaus
wanted=$(mktemp) dropped=$(mktemp) kept=$(mktemp)
trap 'rm -f "$wanted" "$dropped" "$kept"' EXIT
cat > "$wanted"
touch "$keys" "$managed"
grep -vxF -f "$wanted" "$managed" > "$dropped" || true
if [ -s "$dropped" ]; then grep -vxF -f "$dropped" "$keys" > "$kept" || true; cat "$kept" > "$keys"; fi
while IFS= read -r key; do
  grep -qxF -- "$key" "$keys" || printf '%s\n' "$key" >> "$keys"
done < "$wanted"
cat "$wanted" > "$managed"
