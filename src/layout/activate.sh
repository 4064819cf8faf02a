if [ -d /run/systemd/system ]; then
    systemctl daemon-reload && systemctl enable config-manager.service
else
    echo 'config-manager: systemd is not running, boot-time sync not enabled'
fi
