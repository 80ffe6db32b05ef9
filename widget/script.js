/*
 * amoCRM widget «Интеграция 1С» (amo1c-sync), location lcard-1 (the lead card).
 *
 * In the lead card:
 *  - a date chosen in «Дата записи к врачу» -> the doctors working that day (GET {endpoint}/slots?date=)
 *    are offered beside «Врач»;
 *  - a doctor chosen -> that doctor's free times (GET {endpoint}/slots?date=&doctor=) beside
 *    «Время записи»;
 *  - the field names are the service's ([fields] in its sync.ini, GET {endpoint}/fields);
 *  - «Врач» and «Время записи» cannot be edited by hand: only the widget fills them, so that 1C gets
 *    correct data;
 *  - the button «Зарегистрировать запись к врачу в 1с» sets the flag «Зарегистрировать в 1С», saves the
 *    lead (PATCH /api/v4/leads/{id} in the user's session), asks the service to look now
 *    (POST {endpoint}/register?lead_id=) and shows the result: the note the service writes on the lead
 *    («Создан документ Заявка № 219») or the error;
 *  - the button «Отменить запись в 1С» (shown when the service has [fields] cancel_flag) asks for a
 *    confirmation, sets that checkbox, saves the lead, nudges the service (POST {endpoint}/cancel?lead_id=)
 *    and shows the note it writes («Запись отменена: Заявка № 219», «Запись уже отменена: …»,
 *    «Отменять нечего: …»): each of those is a result, not an error.
 * The service is authenticated by the header X-Amo1c-Secret (widget setting «secret»).
 * Plain ES5 and jQuery only: amoCRM loads this file as it is, without a build step.
 */
define(['jquery'], function ($) {
  'use strict';

  var NS = '.amo1c';
  // the lead field names configured in the service's sync.ini ([fields]), from GET {endpoint}/fields
  var FIELDS = null;
  var DEFAULT_UI = {
    doctors_placeholder: 'Список врачей',
    times_placeholder: 'Время записи',
    register_button: 'Зарегистрировать запись к врачу в 1с',
    cancel_button: 'Отменить запись в 1С',
    cancel_confirm: 'Отменить запись этой сделки в 1С?',
    loading_doctors: 'Загружаю врачей на {date}…',
    loading_times: 'Загружаю свободное время: {doctor}, {date}…',
    no_doctors: 'На {date} в 1С нет работающих врачей.',
    no_times: 'У врача {doctor} на {date} нет свободного времени.',
    pick_date: 'Выберите «Дата записи к врачу».',
    pick_doctor: 'Выберите врача.',
    pick_time: 'Выберите время записи.',
    saving: 'Сохраняю сделку…',
    queued: 'Отправлено в 1С, жду ответа…',
    done: 'Готово: {note}',
    still_waiting: 'Служба ещё не обработала запись; результат появится в примечаниях сделки.',
    error_auth: 'Служба amo1c-sync отклонила секрет: проверьте «Секрет» в настройках виджета.',
    error_network: 'Служба amo1c-sync недоступна по адресу {url}.',
    error_save: 'Не удалось сохранить сделку: {detail}',
    error_generic: 'Ошибка: {detail}',
    not_configured: 'Виджет не настроен: укажите адрес службы и секрет в настройках.'
  };
  var BUTTONS = '.amo1c-register, .amo1c-cancel';
  // a note that reads like a failure is shown as an error, unless it is one of the action's outcomes
  var LOOKS_FAILED = /не |ошибк|нельзя|занят|error/i;
  var REGISTER_OK = /Создан|Изменён|уже зарегистр/i;
  // the cancel job's three notes: cancelled, already cancelled (nothing changed), nothing to cancel
  var CANCEL_OK = /^(Запись отменена:|Запись уже отменена:|Отменять нечего:)/;
  var POLL_EVERY_MS = 1500;
  var POLL_FOR_MS = 90000;
  var CSS = [
    '.amo1c-locked{pointer-events:none;opacity:.7}',
    '.amo1c-picker{pointer-events:auto;margin-left:8px;max-width:180px}',
    '.amo1c-actions{margin:10px 0}',
    '.amo1c-register{cursor:pointer}',
    '.amo1c-register[disabled]{cursor:default;opacity:.6}',
    '.amo1c-cancel{cursor:pointer;margin-left:8px}',
    '.amo1c-cancel[disabled]{cursor:default;opacity:.6}',
    '.amo1c-status{margin-top:6px;font-size:13px}',
    '.amo1c-status.amo1c-error{color:#c0392b}',
    '.amo1c-status.amo1c-ok{color:#1e7e34}'
  ].join('\n');

  var CustomWidget = function () {
    var self = this;
    var seq = 0; // the newest request wins; stale answers are dropped

    // ------------------------------------------------------------------ helpers
    function ui(key, params) {
      var texts = null;
      try { texts = self.i18n ? self.i18n('ui') : null; } catch (e) { texts = null; }
      var text = (texts && texts[key]) || DEFAULT_UI[key] || key;
      $.each(params || {}, function (k, v) { text = text.split('{' + k + '}').join(v); });
      return text;
    }

    function settings() {
      var s = (self.get_settings && self.get_settings()) || {};
      return {
        endpoint: String(s.endpoint_url || '').replace(/\/+$/, ''),
        secret: String(s.secret || '')
      };
    }

    var fieldsLoading = null;
    function withFields(then) { // runs ``then`` once the field names are known
      if (FIELDS) { then(); return; }
      if (!fieldsLoading) {
        var s = settings();
        if (!s.endpoint) { return; } // not configured: nothing to mount (the button would say so)
        fieldsLoading = $.ajax({ url: s.endpoint + '/fields', method: 'GET', dataType: 'json', timeout: 30000 })
          .done(function (names) { FIELDS = names; })
          .fail(function () { fieldsLoading = null; });
      }
      fieldsLoading.done(function () { then(); });
    }

    function leadId() {
      var card = window.AMOCRM && AMOCRM.data && AMOCRM.data.current_card;
      var id = card && (card.id || (card.model && card.model.id));
      return id ? parseInt(id, 10) : null;
    }

    function normTime(text) { // "09:05" and "9:05" are the same time
      var m = /^\s*(\d{1,2}):(\d{2})\s*$/.exec(String(text || ''));
      return m ? parseInt(m[1], 10) + ':' + m[2] : String(text || '').trim();
    }

    // A card field by the name the clinic sees: {$row, $input, id, type}
    function field(name) {
      var found = null;
      $('.linked-form__field').each(function () {
        var $row = $(this);
        var $label = $row.find('.linked-form__field__label').first();
        var label = ($label.attr('title') || $label.text() || '').trim();
        if (label === name) {
          var $input = $row.find('[name^="CFV["]').first();
          var m = /^CFV\[(\d+)\]/.exec($input.attr('name') || '');
          var type = 'text';
          if ($row.find('.control--select').length) { type = 'select'; }
          else if ($input.is(':checkbox')) { type = 'checkbox'; }
          else if ($row.is('.linked-form__field-date') || $input.hasClass('js-control-date')) { type = 'date'; }
          found = { $row: $row, $input: $input, id: m ? parseInt(m[1], 10) : null, type: type };
          return false;
        }
        return undefined;
      });
      return found;
    }

    function fieldText(f) {
      if (!f) { return ''; }
      if (f.type === 'select') {
        var v = f.$input.val();
        if (!v) { return ''; }
        var $li = f.$row.find('.control--select--list li[data-value="' + v + '"]');
        return ($li.text() || '').trim();
      }
      if (f.type === 'checkbox') { return f.$input.is(':checked'); }
      return (f.$input.val() || '').trim();
    }

    // Put a value into a card field; for a select, choose the option with that text.
    // Returns {enum_id?, value} for the API, or null when a select has no such option.
    function setField(f, text) {
      if (!f) { return null; }
      if (f.type === 'select') {
        var wanted = normTime(text), enumId = '', shown = '';
        f.$row.find('.control--select--list li[data-value]').each(function () {
          var $li = $(this), t = ($li.text() || '').trim();
          if (text && (t === text || normTime(t) === wanted) && $li.attr('data-value')) {
            enumId = $li.attr('data-value'); shown = t; return false;
          }
          return undefined;
        });
        if (text && !enumId) { return null; }
        f.$input.val(enumId).trigger('change');
        var placeholder = (f.$row.find('.control--select--list li').first().text() || '…').trim();
        f.$row.find('.control--select--button-inner').first().text(shown || placeholder);
        f.$row.find('.control--select--list li').removeClass('control--select--list--item-selected')
          .filter('[data-value="' + enumId + '"]').addClass('control--select--list--item-selected');
        return enumId ? { enum_id: parseInt(enumId, 10), value: shown } : { value: '' };
      }
      if (f.type === 'checkbox') {
        f.$input.prop('checked', !!text).trigger('change');
        return { value: !!text };
      }
      f.$input.val(text || '').trigger('change');
      return { value: text || '' };
    }

    function status(text, kind) {
      var $s = $('.amo1c-status');
      $s.removeClass('amo1c-error amo1c-ok').text(text || '');
      if (kind) { $s.addClass('amo1c-' + kind); }
    }

    function errorText(xhr) {
      var body = null;
      try { body = xhr.responseJSON || JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status === 401) { return ui('error_auth'); }
      if (!xhr.status) { return ui('error_network', { url: settings().endpoint }); }
      return (body && (body.message || body.detail || body.title)) || ui('error_generic', { detail: 'HTTP ' + xhr.status });
    }

    function callService(method, path, data) {
      var s = settings();
      return $.ajax({
        url: s.endpoint + path,
        method: method,
        data: data,
        dataType: 'json',
        timeout: 30000,
        headers: { 'X-Amo1c-Secret': s.secret }
      });
    }

    function fillPicker($select, placeholder, values, current) {
      $select.empty().append($('<option/>').val('').text(placeholder));
      $.each(values, function (_, v) { $select.append($('<option/>').val(v).text(v)); });
      $select.val(current && $.inArray(current, values) >= 0 ? current : '');
      $select.prop('disabled', values.length === 0);
    }

    // ------------------------------------------------------------------ the flow
    function loadDoctors(keepDoctor) {
      var f = field(FIELDS.date), date = fieldText(f), my = ++seq;
      var $doctors = $('.amo1c-doctors'), $times = $('.amo1c-times');
      fillPicker($times, ui('times_placeholder'), [], '');
      if (!keepDoctor) {
        setField(field(FIELDS.doctor), '');
        setField(field(FIELDS.time), '');
      }
      if (!date) { fillPicker($doctors, ui('doctors_placeholder'), [], ''); status(ui('pick_date')); return; }
      status(ui('loading_doctors', { date: date }));
      $doctors.prop('disabled', true);
      callService('GET', '/slots', { date: date }).done(function (body) {
        if (my !== seq) { return; }
        var current = keepDoctor ? fieldText(field(FIELDS.doctor)) : '';
        fillPicker($doctors, ui('doctors_placeholder'), body.doctors || [], current);
        if (!(body.doctors || []).length) { status(ui('no_doctors', { date: date }), 'error'); return; }
        status(ui('pick_doctor'));
        if (keepDoctor && $doctors.val()) { loadTimes(true); }
      }).fail(function (xhr) {
        if (my !== seq) { return; }
        fillPicker($doctors, ui('doctors_placeholder'), [], '');
        status(errorText(xhr), 'error');
      });
    }

    function loadTimes(keepTime) {
      var date = fieldText(field(FIELDS.date)), doctor = $('.amo1c-doctors').val(), my = ++seq;
      var $times = $('.amo1c-times');
      if (!keepTime) { setField(field(FIELDS.time), ''); }
      if (!doctor) { fillPicker($times, ui('times_placeholder'), [], ''); status(ui('pick_doctor')); return; }
      status(ui('loading_times', { doctor: doctor, date: date }));
      $times.prop('disabled', true);
      callService('GET', '/slots', { date: date, doctor: doctor }).done(function (body) {
        if (my !== seq) { return; }
        var current = keepTime ? normTime(fieldText(field(FIELDS.time))) : '';
        fillPicker($times, ui('times_placeholder'), body.times || [], current);
        status((body.times || []).length ? ui('pick_time') : ui('no_times', { doctor: doctor, date: date }),
          (body.times || []).length ? null : 'error');
      }).fail(function (xhr) {
        if (my !== seq) { return; }
        fillPicker($times, ui('times_placeholder'), [], '');
        status(errorText(xhr), 'error');
      });
    }

    function apiValue(f, v) {
      if (!f || !f.id) { return null; }
      if (v === null) { return null; }
      var values = (v.value === '' && v.enum_id === undefined) ? [] : [v];
      return { field_id: f.id, values: values };
    }

    function dateValue(text) { // DD.MM.YYYY -> unix time of noon UTC that day (amoCRM keeps the day)
      var m = /^(\d{1,2})\.(\d{1,2})\.(\d{4})$/.exec(text) || null;
      var iso = /^(\d{4})-(\d{1,2})-(\d{1,2})$/.exec(text) || null;
      var y, mo, d;
      if (m) { d = +m[1]; mo = +m[2]; y = +m[3]; } else if (iso) { y = +iso[1]; mo = +iso[2]; d = +iso[3]; } else { return null; }
      return Math.floor(Date.UTC(y, mo - 1, d, 12, 0, 0) / 1000);
    }

    function saveLead(id, values) {
      return $.ajax({
        url: '/api/v4/leads/' + id,
        method: 'PATCH',
        contentType: 'application/json',
        dataType: 'json',
        data: JSON.stringify({ custom_fields_values: values }),
        headers: { 'X-Requested-With': 'XMLHttpRequest' }
      });
    }

    function saveFailed(xhr) { // amoCRM refused the card's PATCH: its reason, else the status
      var detail = 'HTTP ' + xhr.status;
      try {
        var b = JSON.parse(xhr.responseText);
        detail = b.detail || b.title || detail;
      } catch (e) { /* keep the status */ }
      status(ui('error_save', { detail: detail }), 'error');
      $(BUTTONS).prop('disabled', false);
    }

    function newestNote(id, done) { // the lead's newest note ({id, text}), or null
      $.ajax({ url: '/api/v4/leads/' + id + '/notes', data: { limit: 250 }, dataType: 'json' })
        .done(function (body) {
          var notes = (body && body._embedded && body._embedded.notes) || [], best = null;
          $.each(notes, function (_, n) { if (!best || n.id > best.id) { best = n; } });
          done(best ? { id: best.id, text: (best.params && best.params.text) || '' } : null);
        }).fail(function () { done(null); });
    }

    // Polls the lead until the service has cleared ``flagField``, then shows its note. ``before`` is
    // the newest note id from before the press: an older note is not this press's result, unless
    // the flag was seen set and then cleared (the service writes a note text only once per lead).
    function waitForResult(id, flagField, okNote, before) {
      var started = Date.now(), sawSet = false;
      function show(note) {
        var text = note ? note.text : '';
        var failed = LOOKS_FAILED.test(text) && !okNote.test(text);
        status(ui('done', { note: text }), failed ? 'error' : 'ok');
        $(BUTTONS).prop('disabled', false);
      }
      function again() {
        if (Date.now() - started < POLL_FOR_MS) { setTimeout(poll, POLL_EVERY_MS); return; }
        status(ui('still_waiting'));
        $(BUTTONS).prop('disabled', false);
      }
      function poll() {
        $.ajax({ url: '/api/v4/leads/' + id, dataType: 'json' }).done(function (lead) {
          var flagged = false, number = null, fNumber = field(FIELDS.number);
          $.each((lead && lead.custom_fields_values) || [], function (_, cf) {
            var v = cf.values && cf.values[0] ? cf.values[0].value : null;
            if (cf.field_id === flagField.id) { flagged = !!v; }
            if (fNumber && cf.field_id === fNumber.id) { number = v; }
          });
          if (flagged) { sawSet = true; again(); return; }
          newestNote(id, function (note) {
            if (!sawSet && !(note && note.id > before)) { again(); return; } // not handled yet
            setField(flagField, false);
            if (fNumber && number !== null && fNumber.type === 'text') { fNumber.$input.val(number); }
            show(note);
          });
        }).fail(function (xhr) {
          status(ui('error_generic', { detail: 'HTTP ' + xhr.status }), 'error');
          $(BUTTONS).prop('disabled', false);
        });
      }
      poll();
    }

    function register() {
      var s = settings(), id = leadId();
      if (!s.endpoint || !s.secret) { status(ui('not_configured'), 'error'); return; }
      var fDate = field(FIELDS.date), fDoctor = field(FIELDS.doctor), fTime = field(FIELDS.time);
      var fFlag = field(FIELDS.flag);
      var date = fieldText(fDate), doctor = $('.amo1c-doctors').val(), time = $('.amo1c-times').val();
      if (!date) { status(ui('pick_date'), 'error'); return; }
      if (!doctor) { status(ui('pick_doctor'), 'error'); return; }
      if (!time) { status(ui('pick_time'), 'error'); return; }
      if (!id || !fFlag) { status(ui('error_generic', { detail: 'lead / «' + FIELDS.flag + '»' }), 'error'); return; }
      var vDoctor = setField(fDoctor, doctor), vTime = setField(fTime, time);
      if (vDoctor === null || vTime === null) {
        status(ui('error_generic', { detail: 'нет варианта «' + (vDoctor === null ? doctor : time) +
          '» в списке поля; запустите синхронизацию справочников' }), 'error');
        return;
      }
      setField(fFlag, true);
      var values = [
        { field_id: fDate.id, values: [{ value: dateValue(date) }] },
        apiValue(fDoctor, vDoctor),
        apiValue(fTime, vTime),
        { field_id: fFlag.id, values: [{ value: true }] }
      ];
      $(BUTTONS).prop('disabled', true);
      status(ui('saving'));
      newestNote(id, function (last) {
        saveLead(id, values).done(function () {
          callService('POST', '/register?lead_id=' + encodeURIComponent(id)).done(function () {
            status(ui('queued'));
            waitForResult(id, fFlag, REGISTER_OK, last ? last.id : 0);
          }).fail(function (xhr) {
            status(errorText(xhr), 'error');
            $(BUTTONS).prop('disabled', false);
          });
        }).fail(saveFailed);
      });
    }

    // the second button: sets [fields] cancel_flag, nudges the service (POST /cancel) and shows its note
    function cancel() {
      var s = settings(), id = leadId(), fCancel = FIELDS.cancel_flag ? field(FIELDS.cancel_flag) : null;
      if (!s.endpoint || !s.secret) { status(ui('not_configured'), 'error'); return; }
      if (!id || !fCancel) { status(ui('error_generic', { detail: 'lead / «' + FIELDS.cancel_flag + '»' }), 'error'); return; }
      if (window.confirm && !window.confirm(ui('cancel_confirm'))) { return; }
      setField(fCancel, true);
      $(BUTTONS).prop('disabled', true);
      status(ui('saving'));
      newestNote(id, function (last) {
        saveLead(id, [{ field_id: fCancel.id, values: [{ value: true }] }]).done(function () {
          callService('POST', '/cancel?lead_id=' + encodeURIComponent(id)).done(function () {
            status(ui('queued'));
            waitForResult(id, fCancel, CANCEL_OK, last ? last.id : 0);
          }).fail(function (xhr) {
            status(errorText(xhr), 'error');
            $(BUTTONS).prop('disabled', false);
          });
        }).fail(saveFailed);
      });
    }

    // ------------------------------------------------------------------ the card UI
    function mount() {
      if (!$('#amo1c-style').length) { $('<style id="amo1c-style"/>').text(CSS).appendTo('head'); }
      var fDate = field(FIELDS.date), fDoctor = field(FIELDS.doctor), fTime = field(FIELDS.time);
      if (!fDate || !fDoctor || !fTime) { return false; }
      $.each([fDoctor, fTime], function (_, f) { // not editable by people
        f.$row.find('.linked-form__field__value').children().not('.amo1c-picker').addClass('amo1c-locked')
          .find('button, input, a').attr('tabindex', '-1');
        f.$row.find('input[type="text"]').prop('readonly', true);
      });
      if (!fDoctor.$row.find('.amo1c-doctors').length) {
        fDoctor.$row.find('.linked-form__field__value').append(
          $('<select class="amo1c-picker amo1c-doctors"/>').attr('title', ui('doctors_placeholder')));
      }
      if (!fTime.$row.find('.amo1c-times').length) {
        fTime.$row.find('.linked-form__field__value').append(
          $('<select class="amo1c-picker amo1c-times"/>').attr('title', ui('times_placeholder')));
      }
      fillPicker($('.amo1c-doctors'), ui('doctors_placeholder'), [], '');
      fillPicker($('.amo1c-times'), ui('times_placeholder'), [], '');
      if (!$('.amo1c-actions').length) {
        var $anchor = FIELDS.sum && field(FIELDS.sum) ? field(FIELDS.sum).$row : fTime.$row;
        $('<div class="amo1c-actions"/>')
          .append($('<button type="button" class="button-input amo1c-register"/>').text(ui('register_button')))
          .append(FIELDS.cancel_flag && field(FIELDS.cancel_flag)
            ? $('<button type="button" class="button-input amo1c-cancel"/>').text(ui('cancel_button')) : null)
          .append($('<div class="amo1c-status" role="status" aria-live="polite"/>'))
          .insertAfter($anchor);
      }
      return true;
    }

    function bind() {
      var fDate = field(FIELDS.date);
      $(document).off(NS);
      if (fDate) {
        $(document).on('change' + NS, '[name="' + fDate.$input.attr('name') + '"]', function () { loadDoctors(false); });
      }
      $(document).on('change' + NS, '.amo1c-doctors', function () {
        var v = $(this).val();
        loadTimes(false);
        if (setField(field(FIELDS.doctor), v || '') === null) {
          status(ui('error_generic', { detail: 'нет варианта «' + v + '» в поле «' + FIELDS.doctor +
            '»; запустите синхронизацию справочников' }), 'error');
        }
      });
      $(document).on('change' + NS, '.amo1c-times', function () {
        var v = $(this).val();
        if (v && setField(field(FIELDS.time), v) === null) {
          status(ui('error_generic', { detail: 'нет варианта «' + v + '» в поле «' + FIELDS.time + '»' }), 'error');
        }
      });
      $(document).on('click' + NS, '.amo1c-register', function (e) {
        e.preventDefault();
        if (!$(this).prop('disabled')) { register(); }
      });
      $(document).on('click' + NS, '.amo1c-cancel', function (e) {
        e.preventDefault();
        if (!$(this).prop('disabled')) { cancel(); }
      });
    }

    this.callbacks = {
      render: function () {
        if (self.system && self.system().area && self.system().area !== 'lcard') { return true; }
        if (self.render_template) {
          self.render_template({
            caption: { class_name: 'amo1c-widget-caption' },
            body: '',
            render: '<div class="amo1c-widget-panel">' + $('<div/>').text(
              (self.i18n && self.i18n('widget') && self.i18n('widget').short_description) ||
              'Запись к врачу в 1С').html() + '</div>'
          });
        }
        return true;
      },
      init: function () {
        withFields(function () {
          if (mount() && fieldText(field(FIELDS.date))) { loadDoctors(true); }
        });
        return true;
      },
      bind_actions: function () {
        withFields(bind);
        return true;
      },
      settings: function () {
        return true;
      },
      onSave: function () {
        return true;
      },
      destroy: function () {
        $(document).off(NS);
        $('.amo1c-picker, .amo1c-actions').remove();
        $('.amo1c-locked').removeClass('amo1c-locked');
      },
      contacts: { selected: function () { return true; } },
      leads: { selected: function () { return true; } },
      tasks: { selected: function () { return true; } }
    };
    return this;
  };

  return CustomWidget;
});
