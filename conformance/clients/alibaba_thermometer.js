/*
 * Data parsing script of a thermometer that sends binary frames, written as Alibaba's data
 * parsing documentation describes its scripts (ECMAScript 5, the bytes as a Java byte[]).
 *
 * Frames (big-endian):
 *   0x00 report       | id int32 | temperature int16 (0.1 °C) | humidity uint8 (%)
 *   0x01 set          | id int32 | interval int16 (s)
 *   0x02 report reply | id int32 | code int16
 *   0x03 set reply    | id int32 | code int16
 */
var COMMAND_REPORT = 0x00;
var COMMAND_SET = 0x01;
var COMMAND_REPORT_REPLY = 0x02;
var COMMAND_SET_REPLY = 0x03;
var ALINK_PROP_REPORT_METHOD = 'thing.event.property.post';
var ALINK_PROP_SET_METHOD = 'thing.service.property.set';
var SELF_DEFINE_TOPIC_UPDATE_FLAG = '/user/update';

/* Device frame to Alink JSON: called for /thing/model/up_raw and /thing/model/down_raw_reply. */
function rawDataToProtocol(bytes) {
    var uint8Array = new Uint8Array(bytes.length);
    for (var i = 0; i < bytes.length; i++) {
        uint8Array[i] = bytes[i] & 0xff;
    }
    var dataView = new DataView(uint8Array.buffer, 0);
    var jsonMap = new Object();
    var fHead = uint8Array[0];
    if (fHead == COMMAND_REPORT) {
        jsonMap['method'] = ALINK_PROP_REPORT_METHOD;
        jsonMap['version'] = '1.0';
        jsonMap['id'] = '' + dataView.getInt32(1);
        var params = {};
        params['temperature'] = dataView.getInt16(5) / 10;
        params['humidity'] = dataView.getUint8(7);
        jsonMap['params'] = params;
    } else if (fHead == COMMAND_SET_REPLY) {
        jsonMap['version'] = '1.0';
        jsonMap['id'] = '' + dataView.getInt32(1);
        jsonMap['code'] = '' + dataView.getInt16(5);
        jsonMap['data'] = {};
    } else {
        throw new Error('unknown command ' + fHead);
    }
    return jsonMap;
}

/* Alink JSON to a device frame: called for property sets and for the answers to reports. */
function protocolToRawData(json) {
    var method = json['method'];
    var id = json['id'];
    var payloadArray = [];
    if (method == ALINK_PROP_SET_METHOD) {
        var params = json['params'];
        payloadArray = payloadArray.concat(buffer_uint8(COMMAND_SET));
        payloadArray = payloadArray.concat(buffer_int32(parseInt(id)));
        payloadArray = payloadArray.concat(buffer_int16(params['interval']));
    } else {
        payloadArray = payloadArray.concat(buffer_uint8(COMMAND_REPORT_REPLY));
        payloadArray = payloadArray.concat(buffer_int32(parseInt(id)));
        payloadArray = payloadArray.concat(buffer_int16(json['code']));
    }
    return payloadArray;
}

/* A custom topic's payload to JSON. */
function transformPayload(topic, rawData) {
    var jsonObj = {};
    if (topic.indexOf(SELF_DEFINE_TOPIC_UPDATE_FLAG) !== -1) {
        var uint8Array = new Uint8Array(rawData.length);
        for (var i = 0; i < rawData.length; i++) {
            uint8Array[i] = rawData[i] & 0xff;
        }
        var dataView = new DataView(uint8Array.buffer, 0);
        jsonObj['battery'] = dataView.getUint8(0);
    }
    return jsonObj;
}

function buffer_uint8(value) {
    var uint8Array = new Uint8Array(1);
    var dv = new DataView(uint8Array.buffer, 0);
    dv.setUint8(0, value);
    return [].slice.call(uint8Array);
}

function buffer_int16(value) {
    var uint8Array = new Uint8Array(2);
    var dv = new DataView(uint8Array.buffer, 0);
    dv.setInt16(0, value);
    return [].slice.call(uint8Array);
}

function buffer_int32(value) {
    var uint8Array = new Uint8Array(4);
    var dv = new DataView(uint8Array.buffer, 0);
    dv.setInt32(0, value);
    return [].slice.call(uint8Array);
}
