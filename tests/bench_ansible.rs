//! Ansible against the controller on the same pve-sim.
