#!/bin/sh
# A Botline automation in shell: reports every row of the task's CSV DONE, skipping the rows an
# earlier attempt reported (docs/systems.md). Tasks without a CSV complete with a result.
#
#   bot-agent --name sh-1 --automation 'ROWS=sh examples/automations/count_rows.sh'
set -eu
if [ -z "${BOTLINE_ATTACHMENT:-}" ]; then
    echo '{"result": {"rows": 0}}'
    exit 0
fi
total=$(($(wc -l < "$BOTLINE_ATTACHMENT") - 1))
row=$((BOTLINE_RESUME_AFTER_ROW + 1))
echo "{\"log\": \"task $BOTLINE_TASK_ID: $total row(s), from row $row\"}"
while [ "$row" -le "$total" ]; do
    echo "{\"row\": $row, \"status\": \"DONE\", \"message\": \"row $row of $total\"}"
    row=$((row + 1))
done
