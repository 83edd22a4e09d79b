//! diff(model, state) -> Plan { changes, graph }; renderers (text, markdown,
//! json) only read a Plan; saved plan files.
