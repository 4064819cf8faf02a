mkdir -p /etc/config-manager /etc/infrahaus/credentials /tmp/infrahaus &&
    chmod 0700 /etc/infrahaus/credentials /tmp/infrahaus
